"""What every part of corral shares: settings, errors, the database and the embedded Redis."""
