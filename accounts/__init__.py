"""Who may do what: roles are Django groups. Imports nothing of Lynx, so every app can ask."""
