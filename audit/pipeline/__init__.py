"""The subliminal-learning experiment: teacher data, students, and the cached grid runner (DESIGN.md §2-3)."""
