"""The standalone device runner shipped inside every bundle (imports only numpy + one runtime)."""
