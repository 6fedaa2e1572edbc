"""`describe`: VLM descriptions per criterion, group (collage) descriptions and imported description files."""
