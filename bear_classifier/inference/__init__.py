"""What answers a photo: untrusted bytes made an upright image, the exported model loaded safely and run on ONNX
Runtime, and where it looked. Never imports torch or fastai (an import-linter contract in the tests)."""
