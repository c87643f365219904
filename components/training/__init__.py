"""Training stages as Lightning modules: pretraining now; SFT, reward model, PPO and GRPO build on it."""
