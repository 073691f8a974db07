"""The minimal Gradio app bench/api.py measures this project's API against: gr.Interface with gr.Image → gr.Label,
queue on, Gradio's defaults otherwise, answering with the same export.onnx through the same Classifier.

Run by bench/api.py in the bench environment (its docstring says how to make it), not in this project's:
  PYTHONPATH=. .venv-bench/bin/python -m bench.gradio_app --port 18211
"""
from __future__ import annotations

import argparse
import os

import gradio as gr

from bear_classifier.inference.predict import Classifier


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    # One session whose forward uses every core: Gradio's queue runs one call at a time by default (the API runs one
    # forward per core at once, each on one thread).
    clf = Classifier.load(threads=os.cpu_count() or 1)

    def classify(img):
        pred = clf.predict(img)
        return {clf.classes.name(label): p for label, p in pred.probs.items()}

    demo = gr.Interface(classify, gr.Image(type="pil"), gr.Label(num_top_classes=4), title="Is it a bear?")
    demo.queue().launch(server_name="127.0.0.1", server_port=args.port, show_error=False, quiet=True)


if __name__ == "__main__":
    main()
