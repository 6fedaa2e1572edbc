"""Pure maths and plain helpers at the bottom of the stack: metrics, clustering algorithms, plots,
image finding and decoding, prompt templates, sharding, progress reporting.  Nothing here imports upward."""
