from autosandbox.cli import main

main()
