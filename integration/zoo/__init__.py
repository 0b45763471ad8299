"""The service zoo of test_zoo.py: stock Debian 12 services as the package ships them, a
light workload to learn from and a heavier one learning never saw (one shell script per
service), and the checks that everything was left as found (disk.py, denials.py)."""
