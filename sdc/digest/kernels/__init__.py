"""C sources of the CPU digest kernel, built and loaded by ``sdc.digest.native``."""
