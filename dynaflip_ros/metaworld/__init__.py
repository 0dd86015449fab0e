"""Frozen-encoder MetaWorld benchmark (issue 13): scripted-expert demos, an MLP policy on frozen
embeddings, seeded rollouts (Farama Meta-World 3, https://github.com/Farama-Foundation/Metaworld)."""
