"""The network and what it is exported as: the pretrained ImageNet backbone, the classifier with its "none of these"
gate, calibration, the ONNX export and its model card, and the lesson's load_learner path. Needs torch and fastai."""

# Named here, without torch, so that the command line can offer them without importing it.
OFFLINE_ARCH = "tf_efficientnet_lite0"  # weights from a pip package: no download
COURSE_ARCHS = ("resnet18", "resnet34")  # the lesson's networks: torchvision downloads their weights once
