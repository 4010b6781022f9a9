"""charlstm: character-level LSTM language models with a hand-written C engine."""

__version__ = "0.1.0"
