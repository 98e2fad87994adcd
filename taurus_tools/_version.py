__version__ = "0.1.0"
#: What ``taurus-tools --version`` prints.
VERSION_LINE = f"taurus-tools {__version__}"
