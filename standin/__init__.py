"""A stand-in for the outside systems (platform API, admin portal, onboarding, image CDN)."""
