DELETE FROM accounts WHERE email = 'ops@example.com';
