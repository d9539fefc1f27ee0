"""Key management and every cryptographic operation. Nothing else imports cryptography.hazmat."""
