"""clipclust: cluster and classify images by what a person asks for."""

__version__ = "0.1.0"
