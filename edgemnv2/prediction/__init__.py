"""See what a shipped artifact sees: predictions on images, and fp32-vs-int8 comparisons."""
