"""Writes the time to a file every half second (a template instance's work)."""
import sys
import time

while True:
    with open(sys.argv[1], "w") as f:
        f.write(f"{time.time()}\n")
    time.sleep(0.5)
