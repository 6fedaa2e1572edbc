"""LatteCLIP: unsupervised CLIP fine-tuning with class, image and group descriptions.
objective: prototypes, feature mixer and loss; method: its fine-tuning registry entry and per-run state;
collage: the group-description grid."""
