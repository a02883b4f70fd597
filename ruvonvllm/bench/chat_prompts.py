"""The chat prompts of the CPU benchmarks in shared/BENCHMARKS.md (batch 1 uses the first)."""

CHAT_PROMPTS = [
    "Write a short story about a robot learning to paint.",
    "Explain how a rainbow forms.",
    "Give me three tips for learning a new language.",
    "Describe the water cycle to a ten-year-old.",
    "What makes a good cup of coffee?",
    "Write a poem about the ocean at night.",
    "Why do cats purr?",
    "Summarize the plot of a heist movie you invent.",
    "How do airplanes stay in the air?",
    "Plan a relaxing weekend in the mountains.",
    "What is the difference between weather and climate?",
    "Write a letter from a lighthouse keeper to a friend.",
    "Explain recursion with an everyday example.",
    "Describe a busy market in the morning.",
    "What should I pack for a week-long hiking trip?",
    "Tell me about the history of the bicycle.",
]
