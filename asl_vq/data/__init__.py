"""Reading, preparing, generating and batching fingerspelling landmarks."""
