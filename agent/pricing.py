"""What a session's tokens cost, in USD, when the price per million tokens is known.

The built-in table holds the study's models at OpenAI's list prices (USD per 1M input /
output tokens, standard tier); `--price-in/--price-out` give any other model's. The
embedded and local GGUF models cost nothing.

    >>> cost_usd(1_000_000, 200_000, (2.50, 10.00))
    4.5
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneloop.agent.gguf import is_local

if TYPE_CHECKING:
    from tuneloop.agent.models import ModelSettings
    from tuneloop.tools.usage import Usage

PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
}
FREE = (0.0, 0.0)


def price_for(model: str, price_in: float | None = None, price_out: float | None = None) -> tuple[float, float] | None:
    """(USD per 1M input tokens, per 1M output tokens) for a model spec, or None if unknown."""
    if price_in is not None and price_out is not None:
        return (price_in, price_out)
    if is_local(model):
        return FREE
    name = model.split(":", 1)[1] if model.startswith("openai:") else model
    # dated snapshots (gpt-4o-2024-08-06) cost what their family costs; the longest name wins
    for family in sorted(PRICES_PER_MTOK, key=len, reverse=True):
        if name == family or name.startswith(family + "-20"):
            return PRICES_PER_MTOK[family]
    return None


def cost_usd(input_tokens: int | None, output_tokens: int | None, price: tuple[float, float] | None) -> float | None:
    """The cost of these tokens; None when the price or every token count is unknown."""
    if price is None or (input_tokens is None and output_tokens is None):
        return None
    return ((input_tokens or 0) * price[0] + (output_tokens or 0) * price[1]) / 1e6


def session_cost(usage: Usage, settings: ModelSettings) -> float | None:
    """What a session's model calls cost under its model settings; None when it made none
    or the price is unknown."""
    if not usage.calls:
        return None
    return cost_usd(usage.input_tokens, usage.output_tokens,
                    price_for(settings.model, settings.price_in, settings.price_out))
