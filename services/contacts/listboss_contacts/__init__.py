"""The contacts service: contacts, their tags and each product's history, served to Send."""
