"""ESMC (methods.md section 4): clustering the hidden state an LLM holds after a criterion prompt.

features: hidden/lens features, keyword localisation, explanations; states: the stored criterion states;
method: the registry entry."""
