/*
 * Fieldwatch's Mosquitto 2 plugin: ThingsBoard device and gateway firmware, unchanged.
 *
 * ThingsBoard firmware logs in with its access token as the MQTT username and no password, and publishes to
 * topics that name no device (v1/devices/me/telemetry). Fieldwatch's listener cannot see who published a
 * message, so this plugin, running inside the broker where the login is known, does three things for usernames
 * that are Fieldwatch access tokens (they start with "fwa_"):
 *
 *   1. MOSQ_EVT_BASIC_AUTH: admits the client when the SHA-256 of the username is a token `broker_sync` rendered
 *      into the tokens file (plugin_opt_tokens_file: "<sha256 hex> <d|g> <uid>" lines, sorted); refuses any
 *      other "fwa_" login, and leaves every other username to the password file (MOSQ_ERR_PLUGIN_DEFER);
 *   2. MOSQ_EVT_ACL_CHECK: lets a token client write only the ThingsBoard topics of its kind, and read nothing;
 *      the token is looked up again at every check, so a revoked token stops working at the next sync;
 *   3. MOSQ_EVT_MESSAGE (after the ACL check): rewrites the topic to the Fieldwatch topic of the token's owner,
 *      v1/devices/me/telemetry -> <prefix>/devices/<uid>/telemetry (and .../attributes, and the gateway API's
 *      v1/gateway/telemetry -> <prefix>/gateways/<uid>/telemetry), so a device with token A can only ever write
 *      as device A.
 *
 * The tokens file is read at start and at every reload (SIGHUP, MOSQ_EVT_RELOAD). Plain C, the Mosquitto broker
 * API and OpenSSL's EVP digest; built by `manage.py broker_setup` (apps/devices/broker_plugin.py).
 */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define TOKEN_TAG "fwa_"
#define HASH_HEX_LENGTH 64
#define UID_MAX_LENGTH 128

struct token {
	char hash[HASH_HEX_LENGTH + 1];
	char kind; /* 'd': a device's token, 'g': a gateway's */
	char uid[UID_MAX_LENGTH + 1];
};

static mosquitto_plugin_id_t *plugin_id;
static char *tokens_file;
static char *topic_prefix;
static struct token *tokens;
static size_t token_count;

static int token_compare(const void *a, const void *b)
{
	return strcmp(((const struct token *)a)->hash, ((const struct token *)b)->hash);
}

static bool is_token_username(const char *username)
{
	return username != NULL && strncmp(username, TOKEN_TAG, strlen(TOKEN_TAG)) == 0;
}

/* The tokens file, replacing the loaded set only when it reads completely: a half-written or missing file keeps
 * the previous set (broker_sync replaces it atomically, so this is the broker starting before the first sync). */
static int tokens_load(void)
{
	FILE *file = fopen(tokens_file, "r");
	struct token *loaded = NULL;
	size_t count = 0, capacity = 0;
	char line[HASH_HEX_LENGTH + UID_MAX_LENGTH + 16];

	if (file == NULL) {
		mosquitto_log_printf(MOSQ_LOG_WARNING, "fieldwatch: cannot read tokens file %s; no access token admitted yet",
				tokens_file);
		return MOSQ_ERR_SUCCESS;
	}
	while (fgets(line, sizeof(line), file) != NULL) {
		struct token entry;
		char kind[2];
		if (line[0] == '#' || line[0] == '\n') {
			continue;
		}
		if (sscanf(line, "%64s %1s %128s", entry.hash, kind, entry.uid) != 3 || strlen(entry.hash) != HASH_HEX_LENGTH
				|| (kind[0] != 'd' && kind[0] != 'g')) {
			mosquitto_log_printf(MOSQ_LOG_ERR, "fieldwatch: malformed line in %s; keeping the previous tokens",
					tokens_file);
			fclose(file);
			free(loaded);
			return MOSQ_ERR_SUCCESS;
		}
		entry.kind = kind[0];
		if (count == capacity) {
			size_t grown = capacity ? capacity * 2 : 64;
			struct token *bigger = realloc(loaded, grown * sizeof(struct token));
			if (bigger == NULL) {
				fclose(file);
				free(loaded);
				return MOSQ_ERR_NOMEM;
			}
			loaded = bigger;
			capacity = grown;
		}
		loaded[count++] = entry;
	}
	fclose(file);
	qsort(loaded, count, sizeof(struct token), token_compare);
	free(tokens);
	tokens = loaded;
	token_count = count;
	mosquitto_log_printf(MOSQ_LOG_INFO, "fieldwatch: %zu access token(s) loaded", count);
	return MOSQ_ERR_SUCCESS;
}

/* The token a username is, or NULL. */
static const struct token *token_find(const char *username)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_length = 0;
	struct token key;
	unsigned int i;

	if (!is_token_username(username) || token_count == 0) {
		return NULL;
	}
	if (!EVP_Digest(username, strlen(username), digest, &digest_length, EVP_sha256(), NULL)) {
		return NULL;
	}
	for (i = 0; i < digest_length; i++) {
		snprintf(key.hash + 2 * i, 3, "%02x", digest[i]);
	}
	return bsearch(&key, tokens, token_count, sizeof(struct token), token_compare);
}

static int on_reload(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	return tokens_load();
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *auth = event_data;
	(void)event;
	(void)userdata;

	if (!is_token_username(auth->username)) {
		return MOSQ_ERR_PLUGIN_DEFER; /* a device's or gateway's own login: the password file decides */
	}
	if (auth->password != NULL && auth->password[0] != '\0') {
		return MOSQ_ERR_AUTH; /* ThingsBoard sends the token alone; a password here is a mistake, not a login */
	}
	return token_find(auth->username) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH;
}

static bool topic_is(const char *topic, const char *expected)
{
	return topic != NULL && strcmp(topic, expected) == 0;
}

/* The ThingsBoard topics a token of `kind` may publish to. */
static bool may_write(char kind, const char *topic)
{
	if (kind == 'd') {
		return topic_is(topic, "v1/devices/me/telemetry") || topic_is(topic, "v1/devices/me/attributes");
	}
	return topic_is(topic, "v1/gateway/telemetry") || topic_is(topic, "v1/gateway/attributes")
			|| topic_is(topic, "v1/gateway/connect") || topic_is(topic, "v1/gateway/disconnect");
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *check = event_data;
	const char *username = mosquitto_client_username(check->client);
	const struct token *token;
	(void)event;
	(void)userdata;

	if (!is_token_username(username)) {
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	token = token_find(username);
	if (token == NULL) {
		return MOSQ_ERR_ACL_DENIED; /* revoked (or its device deactivated) since the client connected */
	}
	switch (check->access) {
	case MOSQ_ACL_WRITE:
		return may_write(token->kind, check->topic) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
	case MOSQ_ACL_SUBSCRIBE:
	case MOSQ_ACL_UNSUBSCRIBE:
		/* Firmware subscribes to its RPC and attribute topics at start and may give up when refused; nothing is
		 * ever delivered there (reads are denied below), so granting the SUBACK is harmless. */
		return strncmp(check->topic, "v1/", 3) == 0 ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
	default:
		return MOSQ_ERR_ACL_DENIED;
	}
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *message = event_data;
	const char *username = mosquitto_client_username(message->client);
	const struct token *token;
	const char *kind_path, *leaf;
	char *rewritten;
	size_t length;
	(void)event;
	(void)userdata;

	if (!is_token_username(username)) {
		return MOSQ_ERR_SUCCESS;
	}
	token = token_find(username);
	if (token == NULL) {
		return MOSQ_ERR_ACL_DENIED;
	}
	if (topic_is(message->topic, "v1/devices/me/telemetry") || topic_is(message->topic, "v1/gateway/telemetry")) {
		leaf = "telemetry";
	} else if (topic_is(message->topic, "v1/devices/me/attributes")
			|| topic_is(message->topic, "v1/gateway/attributes")) {
		leaf = "attributes";
	} else {
		return MOSQ_ERR_SUCCESS; /* gateway connect/disconnect notices: no subscriber, nothing to rewrite */
	}
	kind_path = token->kind == 'd' ? "devices" : "gateways";
	length = strlen(topic_prefix) + strlen(kind_path) + strlen(token->uid) + strlen(leaf) + 4;
	rewritten = mosquitto_malloc(length);
	if (rewritten == NULL) {
		return MOSQ_ERR_NOMEM;
	}
	snprintf(rewritten, length, "%s/%s/%s/%s", topic_prefix, kind_path, token->uid, leaf);
	mosquitto_free(message->topic); /* the broker keeps whatever pointer we leave here */
	message->topic = rewritten;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for (i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
		int option_count)
{
	int i, rc;
	(void)userdata;

	plugin_id = identifier;
	for (i = 0; i < option_count; i++) {
		if (strcmp(options[i].key, "tokens_file") == 0) {
			tokens_file = mosquitto_strdup(options[i].value);
		} else if (strcmp(options[i].key, "topic_prefix") == 0) {
			topic_prefix = mosquitto_strdup(options[i].value);
		}
	}
	if (tokens_file == NULL || topic_prefix == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "fieldwatch: set plugin_opt_tokens_file and plugin_opt_topic_prefix");
		return MOSQ_ERR_INVAL;
	}
	rc = tokens_load();
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	if (mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL)) {
		return MOSQ_ERR_UNKNOWN;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
	free(tokens);
	tokens = NULL;
	token_count = 0;
	mosquitto_free(tokens_file);
	mosquitto_free(topic_prefix);
	tokens_file = topic_prefix = NULL;
	return MOSQ_ERR_SUCCESS;
}
