//! The wiring: starts discovery, the scrape supervisor and the API, and stops them together.
