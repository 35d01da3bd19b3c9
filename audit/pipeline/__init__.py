"""The subliminal-learning experiment: teacher data, students, and the cached grid runner (DESIGN §2-3)."""
