"""After the decision: the review of an approved switch (its frozen prediction against the monthly bills),
the nightly re-evaluation under current hardware prices, and the scheduled re-runs of a PoC."""
