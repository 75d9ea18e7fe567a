"""What was made from what (repository) and deletion that keeps it whole (service)."""
