"""The FastAPI service over `outlier_core`: one model per process, served as JSON."""
