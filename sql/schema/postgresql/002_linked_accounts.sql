-- Better Auth's users get backend accounts of their own, linked by (issuer, subject): an
-- identity is the pair, as OpenID Connect defines it, so Better Auth's user "1" is never
-- the backend's user 1. A linked account has no password, and its email (the token's email
-- claim, for display) is no login: only accounts with a password need a unique email.
ALTER TABLE users
    ALTER COLUMN email DROP NOT NULL,
    ALTER COLUMN password_hash DROP NOT NULL,
    ADD COLUMN issuer text,
    ADD COLUMN subject text CHECK (length(subject) BETWEEN 1 AND 255),
    ADD CONSTRAINT users_issuer_subject_key UNIQUE (issuer, subject),
    ADD CONSTRAINT users_password_or_link CHECK (
        (password_hash IS NOT NULL AND email IS NOT NULL AND issuer IS NULL AND subject IS NULL)
        OR (password_hash IS NULL AND issuer IS NOT NULL AND subject IS NOT NULL)
    );

ALTER TABLE users DROP CONSTRAINT users_email_key;

CREATE UNIQUE INDEX users_password_email_key ON users (email) WHERE password_hash IS NOT NULL;
