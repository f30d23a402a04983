package lambdafn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/popconnector/popconnector/internal/config"
)

// SSMAPI is the part of the Systems Manager client the function uses (for
// ssm: secrets and an ssm: configuration source).
type SSMAPI interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// SecretsManagerAPI is the part of the Secrets Manager client the function
// uses (for secretsmanager: secrets).
type SecretsManagerAPI interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// RegisterAWSResolvers makes s resolve ssm: and secretsmanager: references
// through the given clients. A nil client leaves its scheme unregistered, so
// a reference to it fails with config.ErrUnknownScheme.
func RegisterAWSResolvers(s *config.Secrets, sm SecretsManagerAPI, p SSMAPI) {
	if sm != nil {
		s.Register("secretsmanager", SecretsManagerResolver(sm))
	}
	if p != nil {
		s.Register("ssm", SSMResolver(p))
	}
}

// SSMResolver resolves "ssm:NAME" (a parameter name or ARN) with
// GetParameter and WithDecryption, so SecureString parameters come back
// decrypted. The errors it returns never contain the value.
func SSMResolver(c SSMAPI) config.Resolver {
	return config.ResolverFunc(func(ctx context.Context, ref string) (string, error) {
		name, ok := strings.CutPrefix(ref, "ssm:")
		if !ok || name == "" {
			return "", config.ErrNotReference
		}
		return getParameter(ctx, c, name)
	})
}

func getParameter(ctx context.Context, c SSMAPI, name string) (string, error) {
	out, err := c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name), WithDecryption: aws.Bool(true)})
	if err != nil {
		return "", fmt.Errorf("ssm GetParameter: %w", err)
	}
	if out.Parameter == nil || out.Parameter.Value == nil {
		return "", errors.New("ssm GetParameter: the answer holds no value")
	}
	return *out.Parameter.Value, nil
}

// SecretsManagerResolver resolves "secretsmanager:ID" (a secret name or
// ARN) with GetSecretValue (AWSCURRENT). "secretsmanager:ID#KEY" takes the
// string field KEY of a secret stored as a JSON object (the console's
// key/value form); '#' cannot occur in a secret name or ARN, so the suffix is
// unambiguous. A binary secret is used as text. The errors it returns never
// contain the value or any part of it: a JSON decoding error, which would
// quote the offending byte, is replaced by a fixed message.
func SecretsManagerResolver(c SecretsManagerAPI) config.Resolver {
	return config.ResolverFunc(func(ctx context.Context, ref string) (string, error) {
		id, ok := strings.CutPrefix(ref, "secretsmanager:")
		if !ok || id == "" {
			return "", config.ErrNotReference
		}
		id, key, hasKey := strings.Cut(id, "#")
		if id == "" || hasKey && key == "" {
			return "", config.ErrNotReference
		}
		out, err := c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
		if err != nil {
			return "", fmt.Errorf("secretsmanager GetSecretValue: %w", err)
		}
		var v string
		switch {
		case out.SecretString != nil:
			v = *out.SecretString
		case out.SecretBinary != nil:
			v = string(out.SecretBinary)
		default:
			return "", errors.New("secretsmanager GetSecretValue: the answer holds no value")
		}
		if !hasKey {
			return v, nil
		}
		var fields map[string]any
		if err := json.Unmarshal([]byte(v), &fields); err != nil {
			return "", fmt.Errorf("secretsmanager: #%s needs the secret to be a JSON object; it is not a JSON object", key)
		}
		f, ok := fields[key]
		if !ok {
			return "", fmt.Errorf("secretsmanager: the secret has no key %q", key)
		}
		s, ok := f.(string)
		if !ok {
			return "", fmt.Errorf("secretsmanager: key %q of the secret is not a string", key)
		}
		return s, nil
	})
}
