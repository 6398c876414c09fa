INSERT INTO accounts (email, plan) VALUES ('ops@example.com', 'team');
