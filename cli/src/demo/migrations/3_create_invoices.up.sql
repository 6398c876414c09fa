CREATE TABLE invoices (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0)
);
CREATE INDEX invoices_account_id_idx ON invoices (account_id);
