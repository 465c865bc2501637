"""The six VLM4ST modules and the model that wires them."""
