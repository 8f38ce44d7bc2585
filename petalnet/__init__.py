"""petalnet: flower-species classifiers from the "Petals to the Metal" TFRecords, on any accelerator."""
__version__ = "0.1.0"
