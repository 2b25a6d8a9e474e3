"""Networks: the official f-BRS/RITM architectures and the bundled lite model."""
