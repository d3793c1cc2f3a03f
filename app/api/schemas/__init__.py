"""Request and response shapes: the contract the UI and users rely on, kept at the edge."""
