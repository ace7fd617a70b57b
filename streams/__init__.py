"""privacy-pipeline: stream processors that enforce a privacy policy on every event."""

__version__ = "0.1.0"
