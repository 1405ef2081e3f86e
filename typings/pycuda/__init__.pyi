# Minimal stubs for the pycuda calls the TensorRT backend makes (pycuda ships none).
# Enable with mypy_path = "typings"; signatures follow pycuda 2022.1+ documentation.
