"""Retrieval-augmented generation for chapter 10: a passage retriever (`retriever`), a local
OpenAI-compatible language-model endpoint and its client (`llm`), the chatbot as an MLflow
model (`chatbot`), and the judges and scorers that evaluate it (`judges`)."""
