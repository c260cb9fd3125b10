package com.example.consumer;

import ai.prisme.llmgateway.client.BearerCredentials;
import ai.prisme.llmgateway.client.ErrorDetails;
import ai.prisme.llmgateway.client.PrismeChannels;
import ai.prisme.llmgateway.client.StreamAccumulator;
import ai.prisme.llmgateway.v1.ChatCompletionServiceGrpc;
import ai.prisme.llmgateway.v1.ChatMessage;
import ai.prisme.llmgateway.v1.CreateChatCompletionRequest;
import ai.prisme.llmgateway.v1.CreateChatCompletionResponse;
import ai.prisme.llmgateway.v1.CreateEmbeddingRequest;
import ai.prisme.llmgateway.v1.CreateEmbeddingResponse;
import ai.prisme.llmgateway.v1.EmbeddingServiceGrpc;
import ai.prisme.llmgateway.v1.ListModelsRequest;
import ai.prisme.llmgateway.v1.ListModelsResponse;
import ai.prisme.llmgateway.v1.ModelServiceGrpc;
import ai.prisme.llmgateway.v1.StreamOptions;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.MetadataUtils;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

/**
 * Calls a live bridge the way a Java service does, with the released client artifact: a unary chat call,
 * the same request streamed and folded, the model catalogue, an embedding, and a refused call read with
 * ErrorDetails. Prints one JSON object for tests/release to check.
 *
 * <pre>PRISME_BRIDGE=127.0.0.1:50051 PRISME_API_KEY=... java -jar target/prisme-consumer.jar</pre>
 */
public final class Consumer {

  public static void main(String[] args) throws InterruptedException {
    ManagedChannel channel =
        PrismeChannels.builder(System.getenv("PRISME_BRIDGE"), PrismeChannels.plaintext()).build();
    BearerCredentials token = BearerCredentials.of(System.getenv("PRISME_API_KEY")).allowingPlaintext();
    try {
      var chat = ChatCompletionServiceGrpc.newBlockingStub(channel).withCallCredentials(token);
      CreateChatCompletionRequest request =
          CreateChatCompletionRequest.newBuilder()
              .setModel("echo")
              .addMessages(ChatMessage.newBuilder().setRole("user").setContentText("Hello from Java"))
              .build();
      CreateChatCompletionResponse unary =
          chat.withDeadlineAfter(30, TimeUnit.SECONDS).createChatCompletion(request);
      CreateChatCompletionResponse folded =
          StreamAccumulator.accumulate(
              chat.withDeadlineAfter(30, TimeUnit.SECONDS)
                  .streamChatCompletion(
                      request.toBuilder()
                          .setStreamOptions(StreamOptions.newBuilder().setIncludeUsage(true))
                          .build()));

      // The gateway's catalogue takes an org key (iak_*) as x-prismeai-api-key, a user identity as Bearer.
      Metadata orgKey = new Metadata();
      orgKey.put(Metadata.Key.of("x-prismeai-api-key", Metadata.ASCII_STRING_MARSHALLER), System.getenv("PRISME_API_KEY"));
      ListModelsResponse models =
          ModelServiceGrpc.newBlockingStub(channel)
              .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(orgKey))
              .listModels(ListModelsRequest.newBuilder().setPageSize(3).setType("embeddings").build());
      CreateEmbeddingResponse embedded =
          EmbeddingServiceGrpc.newBlockingStub(channel)
              .withCallCredentials(token)
              .createEmbedding(
                  CreateEmbeddingRequest.newBuilder()
                      .setModel("text-embedding-mock")
                      .addInput("Hello, bridge!")
                      .build());

      StatusRuntimeException refused = null;
      try {
        chat.createChatCompletion(request.toBuilder().setModel("error-429").build());
      } catch (StatusRuntimeException e) {
        refused = e;
      }
      Duration delay = ErrorDetails.retryDelay(refused).orElse(Duration.ZERO);

      System.out.printf(
          "{\"unary\":\"%s\",\"folded\":\"%s\",\"total_tokens\":%d,\"models\":%d,\"dimensions\":%d,"
              + "\"code\":\"%s\",\"reason\":\"%s\",\"retry_delay_ms\":%d}%n",
          unary.getChoices(0).getMessage().getContent(),
          folded.getChoices(0).getMessage().getContent(),
          folded.getUsage().getTotalTokens(),
          models.getModelsCount(),
          embedded.getData(0).getEmbeddingCount(),
          Status.fromThrowable(refused).getCode(),
          ErrorDetails.reason(refused),
          delay.toMillis());
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }
}
