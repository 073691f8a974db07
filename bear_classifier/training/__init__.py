"""From folders of photos to an exported model: the DataBlock, cleaning, fine-tuning, cross-validation, evaluation,
review and image search."""
