"""teachwhy: train models that behave well because they learned why."""

__version__ = "0.1.0"
