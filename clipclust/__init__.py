"""clipclust: cluster and classify images by what a person asks for."""

from clipclust.version import __version__
