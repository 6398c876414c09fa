INSERT INTO accounts (id, email, plan) VALUES (1, 'ops@example.com', 'team');
