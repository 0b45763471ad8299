"""What the kernel says and how to ask it: capability and syscall names, pseudo devices,
tracefs, audit. Shared by tracing and validation, so neither reaches into the other."""
