"""LatteCLIP (seed 004): unsupervised CLIP fine-tuning with class, image and group descriptions.
objective: prototypes, feature mixer and loss; collage: the group-description grid."""
