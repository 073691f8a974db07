"""The page's kernel side: the photo input, the model loading in the background, the gallery of answer cards,
the examples row and the "That's wrong" store. Never imports torch or fastai (an import-linter contract)."""
