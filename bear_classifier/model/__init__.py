"""The network and what it is exported as: the pretrained ImageNet backbone, the classifier with its "none of these"
gate, calibration, the ONNX export and its model card, and the lesson's load_learner path. Needs torch and fastai."""
