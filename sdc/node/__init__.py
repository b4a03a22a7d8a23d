"""This machine: its chips (stable identity, software-stack fingerprint), telemetry, and whether
it is busy. Everything that asks the operating system or a vendor library sits here."""
