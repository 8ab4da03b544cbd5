// The reference Kafka client of luka's tests: Apache kafka-clients (4.1.1) doing what the tests compare luka with.
// Run as a single-file program (JDK 17):
//   java -cp "$HOME/.cache/luka-kafka/4.1.1/libs/*" -Dlog4j2.configurationFile=scripts/kafka.d/log4j2.properties \
//     tests/java/KafkaReference.java COMMAND ARGS...
// Commands (stdout carries only the answer; client logs and errors go to stderr; exit 1 on any error):
//   partitions BOOTSTRAP TOPIC KEY...        produce one record per key (key = value = the key in UTF-8, default
//                                            partitioner, acks=all), print the partitions as one line: [2,0,1]
//   read BOOTSTRAP TOPIC PARTITION OFFSET COUNT
//                                            read COUNT records of one partition from OFFSET (no group), one JSON
//                                            line each: {"partition","offset","key","value","timestamp",
//                                            "timestamp_type","headers":[[name,value],...]}, bytes in base64
//   create BOOTSTRAP TOPIC PARTITIONS [NAME=VALUE...]
//                                            create the topic (broker's default replication factor) with these
//                                            topic configs, print {"created":true}, or {"created":false} if it
//                                            already exists
//   grow BOOTSTRAP TOPIC PARTITIONS          add partitions to the topic up to PARTITIONS, print {"partitions":N}
//   produce-headers BOOTSTRAP TOPIC KEY      produce one record (key = value = KEY) with the headers x="1", x="2"
//                                            and n=null, print {"partition":P,"offset":O}
//   produce-zstd BOOTSTRAP TOPIC PARTITION LEVEL BYTES
//                                            produce one record of BYTES zero bytes to PARTITION, compressed with
//                                            zstd at LEVEL (compression.zstd.level), print {"partition":P,"offset":O}
//   produce-at BOOTSTRAP TOPIC PARTITION TIMESTAMP
//                                            produce one record (value "at") to PARTITION with TIMESTAMP (ms),
//                                            print {"partition":P,"offset":O}
//   leaders BOOTSTRAP TOPIC                  print each partition's leader node id in partition order: [1,3,2]
//                                            (-1: no leader)
//   elect-preferred BOOTSTRAP TOPIC          run a preferred leader election for every partition of the topic,
//                                            print {"elected":N} (partitions whose leader changed)
// Environment: KAFKA_REF_SECURITY, extra client properties "k=v;k=v" (e.g. security.protocol, sasl.mechanism,
// sasl.jaas.config, ssl.truststore.*). A ';' separates two properties only where a key ([a-z][a-z0-9._-]*) and
// '=' follow it, so a JAAS value keeps its inner ';'; a sasl.jaas.config value that does not end in ';' gets one
// (so both  password="x";ssl.truststore.type=PEM  and  password="x";;ssl.truststore.type=PEM  work). A stray ';'
// at the very end of the variable stays in the last value.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class KafkaReference {
    static final Duration READ_TIMEOUT = Duration.ofSeconds(20);

    public static void main(String[] args) {
        int status = 0;
        try {
            String command = args.length > 0 ? args[0] : "";
            switch (command) {
                case "partitions" -> {
                    need(args, 4);
                    partitions(args[1], args[2], List.of(args).subList(3, args.length));
                }
                case "read" -> {
                    need(args, 6);
                    int partition = Integer.parseInt(args[3]), count = Integer.parseInt(args[5]);
                    read(args[1], args[2], partition, Long.parseLong(args[4]), count);
                }
                case "create" -> {
                    need(args, 4);
                    create(args[1], args[2], Integer.parseInt(args[3]), List.of(args).subList(4, args.length));
                }
                case "grow" -> {
                    need(args, 4);
                    grow(args[1], args[2], Integer.parseInt(args[3]));
                }
                case "produce-headers" -> {
                    need(args, 4);
                    produceHeaders(args[1], args[2], args[3]);
                }
                case "produce-zstd" -> {
                    need(args, 6);
                    int partition = Integer.parseInt(args[3]), level = Integer.parseInt(args[4]);
                    produceZstd(args[1], args[2], partition, level, Integer.parseInt(args[5]));
                }
                case "produce-at" -> {
                    need(args, 5);
                    produceAt(args[1], args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]));
                }
                case "leaders" -> {
                    need(args, 3);
                    leaders(args[1], args[2]);
                }
                case "elect-preferred" -> {
                    need(args, 3);
                    electPreferred(args[1], args[2]);
                }
                default -> throw new Failure("usage: KafkaReference partitions|read|create|grow|produce-headers|produce-zstd|produce-at|leaders"
                    + "|elect-preferred ARGS..."
                    + " (see the top of the file)");
            }
        } catch (Exception e) {
            Throwable cause = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
            System.err.println("KafkaReference: " + (cause instanceof Failure ? cause.getMessage() : cause));
            status = 1;
        }
        System.out.flush();
        System.exit(status); // the clients' threads must not keep the JVM alive
    }

    /** An error of this program (its message is enough), as opposed to the client's. */
    static class Failure extends RuntimeException {
        Failure(String message) { super(message); }
    }

    static void need(String[] args, int count) {
        if (args.length < count) throw new Failure("too few arguments for " + args[0]);
    }

    static void partitions(String bootstrap, String topic, List<String> keys) throws Exception {
        List<String> partitions = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = producer(bootstrap)) {
            for (String key : keys) {
                byte[] bytes = key.getBytes(StandardCharsets.UTF_8);
                RecordMetadata metadata = producer.send(new ProducerRecord<>(topic, bytes, bytes)).get();
                partitions.add(String.valueOf(metadata.partition()));
            }
        }
        System.out.println("[" + String.join(",", partitions) + "]");
    }

    static void produceHeaders(String bootstrap, String topic, String key) throws Exception {
        byte[] bytes = key.getBytes(StandardCharsets.UTF_8);
        RecordHeaders headers = new RecordHeaders();
        headers.add("x", "1".getBytes(StandardCharsets.UTF_8));
        headers.add("x", "2".getBytes(StandardCharsets.UTF_8));
        headers.add("n", null);
        try (KafkaProducer<byte[], byte[]> producer = producer(bootstrap)) {
            RecordMetadata metadata = producer.send(new ProducerRecord<>(topic, null, bytes, bytes, headers)).get();
            System.out.println("{\"partition\":" + metadata.partition() + ",\"offset\":" + metadata.offset() + "}");
        }
    }

    static void produceZstd(String bootstrap, String topic, int partition, int level, int bytes) throws Exception {
        Properties props = new Properties();
        props.put("compression.type", "zstd");
        props.put("compression.zstd.level", String.valueOf(level));
        props.put("max.request.size", String.valueOf(bytes + 1024 * 1024));
        try (KafkaProducer<byte[], byte[]> producer = producer(bootstrap, props)) {
            ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(topic, partition, null, new byte[bytes]);
            RecordMetadata metadata = producer.send(record).get();
            System.out.println("{\"partition\":" + metadata.partition() + ",\"offset\":" + metadata.offset() + "}");
        }
    }

    static void produceAt(String bootstrap, String topic, int partition, long timestamp) throws Exception {
        byte[] value = "at".getBytes(StandardCharsets.UTF_8);
        try (KafkaProducer<byte[], byte[]> producer = producer(bootstrap)) {
            ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(topic, partition, timestamp, null, value);
            RecordMetadata metadata = producer.send(record).get();
            System.out.println("{\"partition\":" + metadata.partition() + ",\"offset\":" + metadata.offset() + "}");
        }
    }

    static void leaders(String bootstrap, String topic) throws Exception {
        Properties props = config(bootstrap);
        addSecurity(props);
        try (Admin admin = Admin.create(props)) {
            TopicDescription description = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            List<String> leaders = new ArrayList<>();
            for (TopicPartitionInfo partition : description.partitions()) {
                leaders.add(String.valueOf(partition.leader() == null ? -1 : partition.leader().id()));
            }
            System.out.println("[" + String.join(",", leaders) + "]");
        }
    }

    static void electPreferred(String bootstrap, String topic) throws Exception {
        Properties props = config(bootstrap);
        addSecurity(props);
        try (Admin admin = Admin.create(props)) {
            TopicDescription description = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            Set<TopicPartition> partitions = new HashSet<>();
            for (TopicPartitionInfo partition : description.partitions()) {
                partitions.add(new TopicPartition(topic, partition.partition()));
            }
            Map<TopicPartition, Optional<Throwable>> results =
                admin.electLeaders(ElectionType.PREFERRED, partitions).partitions().get();
            // A partition already led by its preferred replica answers ElectionNotNeeded: not an error.
            long elected = results.values().stream().filter(Optional::isEmpty).count();
            System.out.println("{\"elected\":" + elected + "}");
        }
    }

    static void read(String bootstrap, String topic, int partition, long offset, int count) {
        Properties props = config(bootstrap);
        props.put("enable.auto.commit", "false");
        props.put("key.deserializer", ByteArrayDeserializer.class.getName());
        props.put("value.deserializer", ByteArrayDeserializer.class.getName());
        addSecurity(props);
        int read = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            TopicPartition tp = new TopicPartition(topic, partition);
            consumer.assign(List.of(tp));
            consumer.seek(tp, offset);
            long deadline = System.nanoTime() + READ_TIMEOUT.toNanos();
            while (read < count && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(200))) {
                    if (read == count) break;
                    System.out.println(json(record));
                    read++;
                }
            }
        }
        if (read < count) throw new Failure("read " + read + " of " + count + " records");
    }

    static void grow(String bootstrap, String topic, int partitions) throws Exception {
        Properties props = config(bootstrap);
        addSecurity(props);
        try (Admin admin = Admin.create(props)) {
            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(partitions))).all().get();
        }
        System.out.println("{\"partitions\":" + partitions + "}");
    }

    static void create(String bootstrap, String topic, int partitions, List<String> configs) throws Exception {
        Properties props = config(bootstrap);
        addSecurity(props);
        Map<String, String> topicConfigs = new java.util.HashMap<>();
        for (String config : configs) {
            String[] pair = config.split("=", 2);
            if (pair.length != 2) throw new Failure("a topic config is NAME=VALUE, not " + config);
            topicConfigs.put(pair[0], pair[1]);
        }
        boolean created = true;
        try (Admin admin = Admin.create(props)) {
            NewTopic newTopic = new NewTopic(topic, Optional.of(partitions), Optional.empty()).configs(topicConfigs);
            admin.createTopics(List.of(newTopic)).all().get();
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) throw e;
            created = false;
        }
        System.out.println("{\"created\":" + created + "}");
    }

    static KafkaProducer<byte[], byte[]> producer(String bootstrap) {
        return producer(bootstrap, new Properties());
    }

    /** {@link #producer(String)} with `extra` properties on top. */
    static KafkaProducer<byte[], byte[]> producer(String bootstrap, Properties extra) {
        Properties props = config(bootstrap);
        props.putAll(extra);
        props.put("acks", "all");
        // Fail in about 20 s rather than the defaults' 60 s (metadata) and 120 s (delivery).
        props.put("max.block.ms", "20000");
        props.put("request.timeout.ms", "10000");
        props.put("delivery.timeout.ms", "20000");
        props.put("key.serializer", ByteArraySerializer.class.getName());
        props.put("value.serializer", ByteArraySerializer.class.getName());
        addSecurity(props);
        return new KafkaProducer<>(props);
    }

    static Properties config(String bootstrap) {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("client.id", "luka-kafka-reference");
        return props;
    }

    // KAFKA_REF_SECURITY="k=v;k=v": split at each ';' followed by a key and '=' (see the top of the file).
    static void addSecurity(Properties props) {
        String spec = System.getenv("KAFKA_REF_SECURITY");
        if (spec == null || spec.isBlank()) return;
        for (String property : spec.split(";(?=\\s*[a-z][a-z0-9._-]*=)")) {
            if (property.isBlank()) continue;
            int eq = property.indexOf('=');
            if (eq <= 0) throw new Failure("KAFKA_REF_SECURITY: not k=v: " + property);
            String key = property.substring(0, eq).trim(), value = property.substring(eq + 1);
            if (key.equals("sasl.jaas.config") && !value.strip().endsWith(";")) value += ";";
            props.put(key, value);
        }
    }

    static String json(ConsumerRecord<byte[], byte[]> record) {
        StringBuilder headers = new StringBuilder();
        for (Header header : record.headers()) {
            if (headers.length() > 0) headers.append(',');
            headers.append('[').append(quote(header.key())).append(',').append(base64(header.value())).append(']');
        }
        return "{\"partition\":" + record.partition() + ",\"offset\":" + record.offset()
            + ",\"key\":" + base64(record.key()) + ",\"value\":" + base64(record.value())
            + ",\"timestamp\":" + record.timestamp() + ",\"timestamp_type\":" + quote(record.timestampType().name)
            + ",\"headers\":[" + headers + "]}";
    }

    static String base64(byte[] bytes) {
        return bytes == null ? "null" : "\"" + Base64.getEncoder().encodeToString(bytes) + "\"";
    }

    static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> out.append(c < 0x20 ? String.format("\\u%04x", (int) c) : String.valueOf(c));
            }
        }
        return out.append('"').toString();
    }
}
