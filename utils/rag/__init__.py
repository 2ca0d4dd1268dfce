"""Retrieval-augmented generation for chapter 10: a passage retriever (`retriever`), a local
OpenAI-compatible language-model endpoint on llama.cpp (`llm`) behind its guard (`llm_guard`)
and its client (`client`), the chatbot's traced steps (`chatbot`) and MLflow model
(`chatbot_model`, with what it ships in `shipping`), the evaluation data (`evaluation`), and the
judges and scorers that evaluate it (`judges`)."""
