cd /tmp/asb-rec
mkdir -p work/sub
echo hello > work/sub/f.txt
cat work/sub/f.txt | wc -c > work/count
mv work/count work/count.final
rm -f work/sub/f.txt
/usr/bin/python3 - <<'PY'
import os, threading, socket, time
def worker(i):
    for j in range(20):
        with open(f"work/t{i}-{j}", "w") as f: f.write("x")
        os.unlink(f"work/t{i}-{j}")
        time.sleep(0.001)
ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
port = s.getsockname()[1]
c = socket.create_connection(("127.0.0.1", port)); a, _ = s.accept(); c.send(b"x"); a.recv(1)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.sendto(b"q", ("::1", 9))
fd = os.open("work", os.O_RDONLY)
os.open("rel-via-dirfd", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
PY
