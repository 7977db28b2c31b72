"""The lmstudio SDK's documented examples as one script, written for `import lmstudio`.

tests/integration/test_sdk_examples.py runs it twice: as written, at the simulator, and
with only the import line changed to `from producers import sdk as lms`, through the pool.
LM_HOST is the simulator's host (the pool's client accepts it and uses LMQ_BROKER_URL).
"""

import os

import lmstudio as lms

lms.configure_default_client(os.environ["LM_HOST"])
model = lms.llm("llama-3.2-1b-instruct")

# "Chat completions": a single response
result = model.respond("What is the meaning of life?", config={"maxTokens": 30})
print(result)
print(type(result).__name__, result.stats.stop_reason, result.stats.predicted_tokens_count)

# Streaming, with a prediction config in the SDK's keys
chat = lms.Chat("You are a task focused AI assistant")
chat.add_user_message("Tell me a joke")
for fragment in model.respond_stream(chat, config={"temperature": 0.6, "maxTokens": 50}):
    print(fragment.content, end="", flush=True)
print()

# The four callbacks
seen = []
model.respond(chat, config={"maxTokens": 20},
              on_prompt_processing_progress=lambda p: seen.append(f"progress {p:.0%}")
              if p in (0.0, 1.0) else None,
              on_first_token=lambda: seen.append("first token"),
              on_prediction_fragment=lambda f: seen.append("fragment")
              if seen[-1] != "fragment" else None,
              on_message=lambda m: seen.append(f"message {m.role}"))
print(seen)

# Multi-turn chat from history
chat = lms.Chat.from_history({"messages": [
    {"role": "system", "content": "You are a resident AI philosopher."},
    {"role": "user", "content": "What is the meaning of life?"}]})
for question in ("And of death?", "Thank you."):
    answer = model.respond(chat, config={"maxTokens": 25}, on_message=chat.append)
    print(answer.content)
    chat.add_user_message(question)


# Tool use: act() with two tools
def multiply(a: float, b: float) -> float:
    """Given two numbers a and b. Returns the product of them."""
    return a * b


def divide(a: float, b: float) -> float:
    """Given two numbers a and b. Returns the quotient of them."""
    return a / b


def show(message):
    for part in message.content:
        if hasattr(part, "text"):
            print(message.role, part.text)
        elif hasattr(part, "tool_call_request"):
            print(message.role, part.tool_call_request.name, part.tool_call_request.arguments)
        else:
            print(message.role, part.content)


chat = lms.Chat("You are a helpful calculator.")
chat.add_user_message("Please multiply 12 by 7.")
acted = model.act(chat, [multiply, divide], on_message=show, max_prediction_rounds=5)
print("rounds", acted.rounds)

# Embeddings
vectors = lms.embedding_model("text-embedding-nomic-embed-text-v1.5").embed(["a", "b"])
print(len(vectors), [round(x, 5) for x in vectors[1][:4]])
